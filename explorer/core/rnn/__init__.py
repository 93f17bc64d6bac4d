"""Character-level recurrent language models and what their cells do.

- ``model``: :class:`CharRNN`, the checkpoint format, bundled models, sampling
- ``replay``: every gate at every step, recomputed from the module's weights (whole text or streamed in chunks)
- ``cells``: indicators of the text and the search for cells that track them (whole replay or streamed)
- ``memory``: what a replay or search needs, what is available, and the refusal when it cannot fit
- ``render``: the text coloured by a cell (HTML, PNG)
- ``train``: training a char-RNN on a corpus
"""
