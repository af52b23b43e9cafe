"""Many requests decoded together: continuous batching with per-request references, each output
the same as the request's solo run (llma.batch.engine.BatchEngine)."""
from llma.batch.budget import CostModel, RowBudget, Tier
from llma.batch.engine import BatchEngine, open_engine
from llma.batch.runner import BatchRunner
from llma.batch.scheduler import Scheduler, SchedulerStats

__all__ = ["BatchEngine", "open_engine", "BatchRunner", "CostModel", "RowBudget", "Scheduler", "SchedulerStats", "Tier"]
