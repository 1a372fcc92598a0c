"""The pure detection core: folds over sessions, checks, graded response. No I/O, no clock."""

from tether.core.config import DetectionConfig
from tether.core.engine import Monitor
from tether.core.fold import Context
from tether.core.violations import Outbox

__all__ = ["Context", "DetectionConfig", "Monitor", "Outbox"]
