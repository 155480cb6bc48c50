"""`python -m omni_trace.flowview`: the flow view's server (`omni-trace up` starts it)."""

from omni_trace.flowview.api import create_app
from omni_trace.flowview.settings import FlowViewSettings
from services.common.server import serve
from services.common.settings import load_settings

settings = load_settings(FlowViewSettings)
app = create_app(
    settings.jaeger_query_url,
    settings.prometheus_url or None,
    dist_dir=settings.dist_dir,
    jaeger_ui_url=settings.jaeger_ui_url or None,
    allowed_hosts=settings.host_names(),
    access_token=settings.token(),
    max_audits=settings.max_audits,
    verdict_cache=settings.verdict_cache,
    spec=settings.chain_spec(),
)
serve(app, settings)
