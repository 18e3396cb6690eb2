"""The model store: the repository on disk (scan, verify), the registry of served models, their
lifecycle (load, swap, drain, unload) and the watcher of their files."""
