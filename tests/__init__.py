"""tokencompose tests (a regular package: a `tests` package installed by a dependency, e.g. latex2sympy2 through
lmms-eval, must not shadow this one)."""
