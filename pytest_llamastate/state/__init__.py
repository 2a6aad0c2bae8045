"""Storage-neutral state: the store and its registry view, seeds and seed rows, state
templates, persistent stores, the home guard, shared-store leaks, the run config."""
