"""Export and import in other projects' formats."""

from tokencompose.export.hf_llava import load_hf_llava, save_hf_llava

__all__ = ["load_hf_llava", "save_hf_llava"]
