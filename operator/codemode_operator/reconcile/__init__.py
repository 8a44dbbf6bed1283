"""Reconcile logic, one module per kind; handlers.py only wires it to kopf."""


class Retry(Exception):
    """Try again after `delay` seconds; the message is shown as the reason."""

    def __init__(self, message: str, delay: float = 10.0) -> None:
        super().__init__(message)
        self.delay = delay
