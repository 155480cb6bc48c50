from otel import Service, setup_tracing
from services.common.server import serve
from services.dashboard.app import create_app
from services.dashboard.settings import DashboardSettings

settings = DashboardSettings()
setup_tracing(Service.DASHBOARD)
serve(create_app(settings), settings.host, settings.port, settings.log_level)
