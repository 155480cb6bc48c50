from otel import Service, setup_tracing
from services.common.server import serve
from services.common.settings import load_settings
from services.dashboard.app import create_app
from services.dashboard.settings import DashboardSettings

settings = load_settings(DashboardSettings)
setup_tracing(Service.DASHBOARD)
serve(create_app(settings), settings)
