"""Sampling the agent from outside: its process, its cgroup and its HTTP health listener."""
