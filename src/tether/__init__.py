"""tether: continuous authorization monitoring for AI agents and other non-human identities."""

__version__ = "0.1.0"
