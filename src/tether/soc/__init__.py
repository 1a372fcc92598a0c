"""Handing findings to a SOC: OCSF forwarding, alert sinks, and the live console (docs/soc.md).

Everything here consumes ``tether.findings`` (and the other output topics) downstream of the
workers: none of it sits in the detection path, so a slow SIEM or a dead webhook can delay an
alert but never a revocation.
"""
