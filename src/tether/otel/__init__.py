"""OpenTelemetry ingest: GenAI, MCP and OpenInference spans from the Collector's Kafka exporter.

``attributes`` names every attribute tether reads (the conventions are Development status and
move; one module to change), ``decode`` turns an exporter record into flat spans, ``mapping``
turns the spans of a trace into tether input events plus a coverage record (pure: no I/O, no
clock), and ``adapter`` is the Kafka process around them (``tether ingest otlp``).
"""
