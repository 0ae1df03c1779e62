"""The token-budget explorer (``tokencompose explore``): what each token scheme keeps, costs and answers as its
budget moves. ``knobs``, ``overlays``, ``views`` and ``session`` are plain functions over the model (tested without
a browser); ``app`` is the Gradio page over them (the ``app`` extra), imported only by the command."""
