"""Employers' rosters: their members, runs, monitoring schedule, events and webhooks (issue 11)."""
