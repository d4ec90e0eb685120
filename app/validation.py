"""Field-by-field checks of request input, collecting every error before answering 422."""

from datetime import datetime, timezone

from app.errors import ValidationFailed

MISSING = object()


def parse_datetime(text: str) -> datetime:
    """ISO 8601 date or date-time; a value without offset is taken as UTC."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        raise ValueError("not an ISO 8601 date")
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


class Checker:
    """Reads fields out of a dict; each accessor records an error instead of raising."""

    def __init__(self, data: dict, allowed: tuple[str, ...] | None = None):
        self.data = data
        self.errors: dict[str, list[str]] = {}
        if allowed is not None:
            for name in data:
                if name not in allowed:
                    self.fail(name, f"Unknown field; allowed: {', '.join(allowed)}.")

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def _get(self, name: str, required: bool, nullable: bool):
        value = self.data.get(name, MISSING)
        if value is MISSING:
            if required:
                self.fail(name, f"The {name} field is required.")
            return MISSING
        if value is None and not nullable:
            self.fail(name, f"The {name} field may not be null.")
            return MISSING
        return value

    def string(self, name: str, *, required=False, nullable=False, max_len=255, pattern=None):
        value = self._get(name, required, nullable)
        if value is MISSING or value is None:
            return value
        if not isinstance(value, str):
            self.fail(name, f"The {name} must be a string.")
        elif not value.strip():
            self.fail(name, f"The {name} must not be blank.")
        elif len(value) > max_len:
            self.fail(name, f"The {name} may not be greater than {max_len} characters.")
        elif pattern is not None and not pattern.fullmatch(value):
            self.fail(name, f"The {name} format is invalid.")
        else:
            return value
        return MISSING

    def choice(self, name: str, choices, *, required=False, nullable=False):
        value = self._get(name, required, nullable)
        if value is MISSING or value is None:
            return value
        if not isinstance(value, str) or value not in choices:
            self.fail(name, f"The {name} must be one of: {', '.join(choices)}.")
            return MISSING
        return value

    def integer(self, name: str, *, minimum: int, maximum: int, required=False):
        value = self._get(name, required, False)
        if value is MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"The {name} must be an integer.")
        elif not minimum <= value <= maximum:
            self.fail(name, f"The {name} must be between {minimum} and {maximum}.")
        else:
            return value
        return MISSING

    def timestamp(self, name: str, *, required=False, nullable=True):
        value = self._get(name, required, nullable)
        if value is MISSING or value is None:
            return value
        try:
            return parse_datetime(value)
        except (TypeError, ValueError):
            self.fail(name, f"The {name} must be an ISO 8601 date-time.")
            return MISSING

    def object(self, name: str, *, required=False):
        value = self._get(name, required, False)
        if value is MISSING:
            return value
        if not isinstance(value, dict):
            self.fail(name, f"The {name} must be an object.")
            return MISSING
        return value

    def string_list(self, name: str, *, required=False, max_items=100):
        value = self._get(name, required, False)
        if value is MISSING:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, f"The {name} must be an array of strings.")
        elif not value:
            self.fail(name, f"The {name} must not be empty.")
        elif len(value) > max_items:
            self.fail(name, f"The {name} may not have more than {max_items} items.")
        else:
            return value
        return MISSING

    def done(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


def present(value) -> bool:
    return value is not MISSING
