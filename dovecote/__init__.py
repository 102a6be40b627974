"""Dovecote's Python client and user command line (``dovecote.client``, ``dovecote.cli``)."""
