"""Many requests decoded together: continuous batching with per-request references, each output
the same as the request's solo run (llma.batch.engine.BatchEngine)."""
from llma.batch.budget import CostModel, RowBudget, Tier
from llma.batch.engine import BatchEngine
from llma.batch.runner import BatchRunner
from llma.batch.scheduler import Scheduler, SchedulerStats

__all__ = ["BatchEngine", "BatchRunner", "CostModel", "RowBudget", "Scheduler", "SchedulerStats", "Tier"]
