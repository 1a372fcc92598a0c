"""Adapters: one module per technology × role (Kafka admin/publisher, Redis registry, fakes).

Nothing here connects at import time; every client is created by an explicit ``start()`` (or on
first use) so that importing tether never touches the network.
"""
