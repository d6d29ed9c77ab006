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
# The embedded default is SQLite with no DATABASE_URL: one machine, one VAR_DIR shared by the web
# server and the workers. Anything else is a deployment and must be configured as one.
EMBEDDED_DEFAULT = "DATABASE_URL" not in os.environ


def persisted_secret_key(folder: Path) -> str:
    """The embedded default's secret key: made once, at random, and kept (0600) in ``folder``.

    It signs sessions and encrypts stored judge API keys, so it must be private to this machine and
    stable across restarts; web server and workers share it through the file. Two processes starting
    at once race on O_EXCL, and the loser reads the winner's key.
    """
    import secrets

    path = folder / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the winner may not have written it yet
            if key := path.read_text().strip():
                return key
            import time

            time.sleep(0.02)
        raise
    key = secrets.token_urlsafe(50)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not EMBEDDED_DEFAULT and not DEBUG:
        from django.core.exceptions import ImproperlyConfigured

        # A built-in key would be public (it is in this file) and would protect stored judge keys.
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DATABASE_URL set this is a deployment: set SECRET_KEY to a long random "
            "value shared by the web servers and workers (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(50))'). Only the embedded default (no DATABASE_URL) makes its own.")
    SECRET_KEY = persisted_secret_key(VAR_DIR)
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
    # the order is the apps' layering: each imports only those above it (tests/webapp/test_app_dependencies.py)
    "webapp.datasets",
    "webapp.rubrics",
    "webapp.annotation",
    "webapp.training",
    "webapp.judging",
    "webapp.routing",
    "webapp.analysis",
    "webapp.rounds",
    "webapp.demo",  # last: seed_demo calls every app above
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # /api/ only: refuses NUL characters naming the field, and makes every error answer JSON.
    "webapp.api.middleware.ApiBoundaryMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "webapp.security.ContentSecurityPolicyMiddleware",
    # After authentication: it turns a sign-in refused by the throttle into a 429.
    "axes.middleware.AxesMiddleware",
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

# No persistent connections by default: under uvicorn each sync request runs in a thread of its own,
# and a connection kept per thread piles up (24 clients held 78 PostgreSQL connections). With 0 a
# request opens one connection and closes it when it ends; DATABASE_POOL_SIZE trades that connect for
# a bounded pool. README.md ("Database connections") says how the count scales.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'reward_studio.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
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
SECURE_REFERRER_POLICY = "same-origin"
# Served over HTTPS (HTTPS=1): cookies only over TLS, HSTS, and plain HTTP redirected. Behind a proxy
# that terminates TLS, SECURE_PROXY_SSL_HEADER=1 trusts its X-Forwarded-Proto.
HTTPS = env_bool("HTTPS", False)
if HTTPS:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)  # only a flag until you submit the domain
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    if env_bool("SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Sent on every page (webapp.security.ContentSecurityPolicyMiddleware): scripts only from this
# origin, so an injected <script> or on* handler does not run, and nothing is sent elsewhere.
# Inline style attributes stay allowed (the templates and uPlot set them).
CONTENT_SECURITY_POLICY = os.environ.get("CONTENT_SECURITY_POLICY", "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'", "img-src 'self' data: blob:",
    "connect-src 'self'", "font-src 'self'", "object-src 'none'", "base-uri 'self'", "form-action 'self'",
    "frame-ancestors 'none'"]))

# Sign-in throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one username from
# one address, on the login page or POST /api/v1/auth/token, that pair is refused (429) for
# LOGIN_COOLOFF_MINUTES. Attempts live in the database, so every web process sees them.
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "10"))
AXES_COOLOFF_TIME = float(os.environ.get("LOGIN_COOLOFF_MINUTES", "15")) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "webapp.accounts.views.locked_out"
AXES_VERBOSE = False
AUTHENTICATION_BACKENDS = ["webapp.accounts.backends.ThrottledSignInBackend",
                           "django.contrib.auth.backends.ModelBackend"]

# Folders (besides a project's own registry entries and job folders) whose models any member may use
# as a backbone, policy, reward model or local judge; never put ARTIFACT_ROOT here (it is ignored there).
MODEL_ROOTS = env_list("MODEL_ROOTS", str(VAR_DIR / "models"))

# A user may have at most this many jobs waiting for a worker; more are refused with a message.
JOB_MAX_QUEUED_PER_USER = int(os.environ.get("JOB_MAX_QUEUED_PER_USER", "20"))
# A routing plan is computed in the request (about 7 KB per pooled comparison); a larger pool is refused
# with a message instead of growing the web worker until it is killed (docs/benchmarks.md, scale).
ROUTING_INLINE_POOL = int(os.environ.get("ROUTING_INLINE_POOL", "200000"))
# Environment variables a judge config may name as its API key (api_key_env). Anything else, such as
# DATABASE_URL, would be sent as a bearer token to an endpoint the designer chose.
JUDGE_KEY_ENV_ALLOWLIST = env_list("JUDGE_KEY_ENV_ALLOWLIST", "")

# Where jobs write checkpoints, models, snapshots. A path (shared storage for several machines).
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", VAR_DIR / "artifacts"))

# Datasets and annotation.
# Uploads larger than this are refused before they are read (a message names the limit).
DATASET_MAX_UPLOAD_BYTES = int(os.environ.get("DATASET_MAX_UPLOAD_BYTES", str(1024**3)))
# Uploads up to this size are imported during the request; larger ones by a worker, with progress.
DATASET_INLINE_IMPORT_BYTES = int(os.environ.get("DATASET_INLINE_IMPORT_BYTES", str(2 * 1024**2)))
# One comparison build creates at most this many (all pairs grow as n²/2); more is refused with the count.
COMPARISONS_BUILD_MAX = int(os.environ.get("COMPARISONS_BUILD_MAX", "50000"))
# Reward-source comparisons over more responses than this are scored by worker jobs, not in the request.
ANALYSIS_INLINE_RESPONSES = int(os.environ.get("ANALYSIS_INLINE_RESPONSES", "5000"))
# A rubric or reward-spec preview/check stops scoring after this long and says how far it got, so a
# designer's rubric never holds a web worker.
RUBRIC_PREVIEW_BUDGET_SECONDS = float(os.environ.get("RUBRIC_PREVIEW_BUDGET_SECONDS", "2"))
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
# A job queued this long whose queue holds fewer messages than queued jobs is sent again (lost messages).
JOB_QUEUED_RESEND_SECONDS = float(os.environ.get("JOB_QUEUED_RESEND_SECONDS", "60"))
# After SIGTERM, how long a cancelled job may spend saving a checkpoint before SIGKILL.
JOB_KILL_GRACE_SECONDS = float(os.environ.get("JOB_KILL_GRACE_SECONDS", "10"))
# Where a "Serve this reward spec version" job listens on its worker: loopback by default; an address the
# trainers can reach (0.0.0.0) to serve other machines (the app always sets a bearer token).
REWARD_SERVE_HOST = os.environ.get("REWARD_SERVE_HOST", "127.0.0.1")

# How often a worker stores the labels a running LM judge job has written so far.
LM_LABELS_RECORD_INTERVAL_SECONDS = float(os.environ.get("LM_LABELS_RECORD_INTERVAL_SECONDS", "5"))

# Redis for live-update fan-out (SSE). Empty: dashboards poll the database instead.
REDIS_URL = os.environ.get("REDIS_URL", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "no_traceback_for_client_errors": {"()": "django.utils.log.CallbackFilter",
                                           "callback": "ext://webapp.log_filters.no_traceback_for_client_errors"},
        "quiet_periodic_tasks": {"()": "webapp.log_filters.QuietPeriodicTasks"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"},
                # django-axes logs every failed sign-in at INFO; keep its lock-outs (WARNING).
                "axes": {"level": "WARNING"},
                # A 403 is a refusal, not a fault: one line, no traceback.
                "django.request": {"filters": ["no_traceback_for_client_errors"]},
                # The beat schedule's bookkeeping tasks run every few seconds; their INFO lines go.
                "celery.beat": {"filters": ["quiet_periodic_tasks"]},
                "celery.app.trace": {"filters": ["quiet_periodic_tasks"]},
                "celery.worker.strategy": {"filters": ["quiet_periodic_tasks"]}},
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
# Bookkeeping has a queue of its own, served by one worker that also runs beat (bin/run): no long import
# or judging job on `default` can starve the reaper.
CELERY_TASK_ROUTES = {
    "jobs.reap_stale": {"queue": "maintenance"},
    "judging.record_lm_labels": {"queue": "maintenance"},
}
CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {"task": "jobs.reap_stale", "schedule": JOB_REAPER_INTERVAL_SECONDS},
    # LM labels are stored while the judge job runs, and a failed or cancelled one gives its pairs back.
    "record-lm-labels": {"task": "judging.record_lm_labels", "schedule": LM_LABELS_RECORD_INTERVAL_SECONDS},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
