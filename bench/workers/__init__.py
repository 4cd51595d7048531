"""The worker machinery: the zygote that forks one worker per case, the launcher that starts and watches it, the worker protocol, and the failure classes."""
