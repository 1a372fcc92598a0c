"""``tether ssf``: an SSF 1.0 transmitter of tether's revocations (push RFC 8935, poll RFC 8936).

docs/gateways.md, "SSF receivers", says how a receiver subscribes.
"""
