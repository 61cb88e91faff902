"""Schedules and sensors: groups, triggers, missing files and alerts."""
