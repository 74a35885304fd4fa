"""Models of the plugin (fairseq imports this package through ``--user-dir``)."""
from .s2t_gsgn import S2TGSGNEncoder, S2TGSGNModel  # noqa: F401
