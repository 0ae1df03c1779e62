"""Export and import in other projects' formats."""

from tokencompose.export.hf_llava import export_problems, load_hf_llava, save_hf_llava
from tokencompose.export.model_card import model_card

__all__ = ["export_problems", "load_hf_llava", "model_card", "save_hf_llava"]
