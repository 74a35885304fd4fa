"""Offline data preparation (feature back-ends for discrete units).

Nothing here is imported when fairseq loads the plugin (``--user-dir gsgn_fairseq``): these
modules pull in heavier dependencies (``transformers``) that training and decoding never need.
"""
