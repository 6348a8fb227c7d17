import hashlib
import secrets

from django.db import models


class ApiClient(models.Model):
    """A client app allowed to call the API. Only a SHA-256 of its key is stored."""

    KEY_PREFIX_LENGTH = 8

    name = models.CharField(max_length=100, unique=True)
    key_prefix = models.CharField(max_length=16, editable=False, help_text="First characters, to recognise a key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name

    @staticmethod
    def hash_key(key: str) -> str:
        # Keys are 32 random bytes, so a fast hash is enough: there is nothing to brute-force.
        return hashlib.sha256(key.encode()).hexdigest()

    def set_new_key(self) -> str:
        """Give the client a fresh key and return it; it is shown once and never stored in clear."""
        key = secrets.token_urlsafe(32)
        self.key_prefix = key[: self.KEY_PREFIX_LENGTH]
        self.key_hash = self.hash_key(key)
        return key
