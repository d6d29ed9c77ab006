from rlcore.analysis.checkpoint_scoring import OveroptScoreSettings

from webapp.settings_forms import SettingsForm


class OveroptScoringSettingsForm(SettingsForm):
    """How a scoring job samples the checkpoints: rlcore's OveroptScoreSettings, field by field."""

    settings_model = OveroptScoreSettings
