"""A tamper-evident decision log (docs/audit.md).

``chain`` links every decision record of a decisions-topic partition to the one before it;
``checkpoint`` signs a partition's chain head at intervals; ``verify`` reads a log (a topic, a
file, an evidence bundle) and says precisely what was changed, inserted, removed, reordered or
truncated. ``chain`` and ``verify`` are pure (no I/O, no clock): the worker, ``tether replay``
and ``tether audit`` share them.
"""
