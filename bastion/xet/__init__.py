"""Xet storage: the protocol's formats (hashes, chunking, xorbs, shards, reconstructions).

Format layer only -- no HTTP, no database: ``hashing``, ``chunking``, ``xorb``, ``shard``,
``reconstruction`` and ``packing`` follow the Xet Protocol Specification 1.1 (hub-docs docs/xet).
"""
