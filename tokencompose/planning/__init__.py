"""Training plans: the cost model (pure) and what it reads from a recipe built on the meta device."""
