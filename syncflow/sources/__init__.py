"""The source kinds syncflow pulls from: :mod:`syncflow.sources.base` (the protocol a kind
implements and the ``KINDS`` registry) and one module per kind (``http_seq``, ``database`` with
``postgres`` / ``mysql``, ``telegram`` / ``telegram_chat``). Import what you need from its module."""
