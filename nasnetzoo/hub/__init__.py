"""The weights commands (``convert``, ``download``, ``push``), the converter's output checks and the
model card.  The weights format, the publishers' sources and the download live in
:mod:`nasnetzoo.weights`, below the factory."""
