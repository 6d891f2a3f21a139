"""``users``: who created and changed things."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from .deployments import Deployment
    from .serves import Serve


class User(Model):
    """A Darwin user. Darwin's primary key column is ``user_id``, not ``id``."""

    user_id = fields.IntField(primary_key=True)
    username = fields.CharField(max_length=50, unique=True)
    token = fields.CharField(max_length=255)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    serves: fields.ReverseRelation[Serve]
    deployments: fields.ReverseRelation[Deployment]

    class Meta:
        table = "users"
        app = "models"

    def __str__(self) -> str:
        return self.username
