"""Tasks: reasoning-gym generators, Wikipedia QA, a toy task with a known optimum, and user files."""

from juncture.tasks.base import Task, TaskDataError, build_tasks

__all__ = ["Task", "TaskDataError", "build_tasks"]
