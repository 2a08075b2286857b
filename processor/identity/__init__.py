"""Where identities come from: the session stores, the directory and the intake APIs."""
