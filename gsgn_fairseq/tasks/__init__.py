"""Tasks of the plugin (fairseq imports this package through ``--user-dir``)."""
from .speech_to_text_multiview import SpeechToTextMultiviewTask  # noqa: F401
