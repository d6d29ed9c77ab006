"""Django settings. Every production knob is an environment variable (README.md lists them);
with none set, the app runs on the embedded default: SQLite and Celery's filesystem broker."""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the app writes at run time (SQLite file, broker folders, artifacts) lives under VAR_DIR.
VAR_DIR = Path(os.environ.get("REWARD_STUDIO_VAR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in ("1", "true", "yes", "on")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or (
    # A fixed key is only acceptable for the embedded, local-only default.
    "embedded-default-insecure-key-set-SECRET_KEY-in-production"
)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "webapp.accounts",
    "webapp.projects",
    "webapp.jobs",
    "webapp.rubrics",
    "webapp.datasets",
    "webapp.annotation",
    "webapp.training",
    "webapp.judging",
    "webapp.routing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, not first as WhiteNoise suggests: it is the only sync-only middleware, and under ASGI each
    # switch between async and sync middleware costs a thread hop. Here the request makes a single
    # hop, into WhiteNoise and the (sync) view together (bench/annotation_loop.py: web CPU per
    # cycle 13.3 -> 11.5 ms).
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'reward_studio.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes write concurrently; wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif int(os.environ.get("DATABASE_POOL_SIZE", "0")) > 0:
    # PostgreSQL under uvicorn: sync views run in per-request threads, so persistent connections
    # pile up; a psycopg pool hands each request a warm connection and takes it back.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2, "max_size": int(os.environ["DATABASE_POOL_SIZE"]), "timeout": 30}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
if env_bool("FAST_PASSWORD_HASHING", False):
    # Tests only: PBKDF2's deliberate slowness would dominate a suite that creates many users.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from STATICFILES_DIRS without a collectstatic step.
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Where jobs write checkpoints, models, snapshots. A path (shared storage for several machines).
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", VAR_DIR / "artifacts"))

# Datasets and annotation.
# Uploads larger than this are refused before they are read (a message names the limit).
DATASET_MAX_UPLOAD_BYTES = int(os.environ.get("DATASET_MAX_UPLOAD_BYTES", str(1024**3)))
# Uploads up to this size are imported during the request; larger ones by a worker, with progress.
DATASET_INLINE_IMPORT_BYTES = int(os.environ.get("DATASET_INLINE_IMPORT_BYTES", str(2 * 1024**2)))
# An annotator's item returns to the pool when left unlabelled this long.
ANNOTATION_ASSIGNMENT_TIMEOUT_SECONDS = float(os.environ.get("ANNOTATION_ASSIGNMENT_TIMEOUT_SECONDS", "900"))

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
BROKER_FOLDER = VAR_DIR / "broker"
# Longest job we expect, plus margin: a message not acked by then is redelivered to another worker.
JOB_MAX_SECONDS = int(os.environ.get("JOB_MAX_SECONDS", str(7 * 24 * 3600)))
# A running job whose heartbeat is older than this is declared dead by the reaper.
JOB_HEARTBEAT_TIMEOUT_SECONDS = float(os.environ.get("JOB_HEARTBEAT_TIMEOUT_SECONDS", "60"))
JOB_REAPER_INTERVAL_SECONDS = float(os.environ.get("JOB_REAPER_INTERVAL_SECONDS", "15"))
# After SIGTERM, how long a cancelled job may spend saving a checkpoint before SIGKILL.
JOB_KILL_GRACE_SECONDS = float(os.environ.get("JOB_KILL_GRACE_SECONDS", "10"))

# How often a worker stores the labels a running LM judge job has written so far.
LM_LABELS_RECORD_INTERVAL_SECONDS = float(os.environ.get("LM_LABELS_RECORD_INTERVAL_SECONDS", "5"))

# Redis for live-update fan-out (SSE). Empty: dashboards poll the database instead.
REDIS_URL = os.environ.get("REDIS_URL", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_CREATE_MISSING_QUEUES = True
# Long GPU work: ack only when done (a crash redelivers), take one message at a time.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redis redelivers an unacked message after this; it must outlast the longest job.
    "visibility_timeout": JOB_MAX_SECONDS + 3600,
}
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (BROKER_FOLDER / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS.update({
        "data_folder_in": str(BROKER_FOLDER / "queue"),
        "data_folder_out": str(BROKER_FOLDER / "queue"),
        "processed_folder": str(BROKER_FOLDER / "processed"),
        "store_processed": False,
        "control_folder": str(BROKER_FOLDER / "control"),
    })
CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {"task": "jobs.reap_stale", "schedule": JOB_REAPER_INTERVAL_SECONDS},
    # LM labels are stored while the judge job runs, and a failed or cancelled one gives its pairs back.
    "record-lm-labels": {"task": "judging.record_lm_labels", "schedule": LM_LABELS_RECORD_INTERVAL_SECONDS},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
