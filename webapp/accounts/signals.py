"""A password change revokes the user's API tokens, however the password was changed (Account page,
`manage.py changepassword`, a script): a token made under the old password is what a leaked password
would have bought."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

User = get_user_model()


@receiver(pre_save, sender=User)
def _note_password_change(sender, instance, update_fields=None, **kwargs):
    # Saves that name their fields without the password (last_login on every sign-in) cannot change it.
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    instance._password_changed = stored is not None and stored != instance.password


@receiver(post_save, sender=User)
def _revoke_tokens_after_password_change(sender, instance, created, **kwargs):
    if getattr(instance, "_password_changed", False):
        from webapp.accounts.services import api_tokens_revoke_all

        api_tokens_revoke_all(user=instance)
        instance._password_changed = False
