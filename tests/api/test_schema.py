"""The OpenAPI schema, tested by schemathesis: requests generated from it, valid and invalid,
never answer 5xx, and every answer matches what the schema documents."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from api.app import create_app
from tests.api.conftest import Service

EXAMPLES = 30


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_to_its_schema(service: Service, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(service.context))
    # Every call carries tenant a's key (below): the schema's security scheme is not generated.
    schema.config.generation.update(with_security_parameters=False)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    ran: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            # What no schema can say (a model that exists, a file id uploaded, sampling knobs
            # only with do_sample) is refused with a 4xx: the one check left out.
            case.call_and_validate(
                headers=service.as_("a"), excluded_checks=[positive_data_acceptance]
            )

        try:
            check()
        except Unsatisfiable:
            # Where every value is valid (GET /healthz, a free-form id) nothing invalid exists.
            assert mode is GenerationMode.NEGATIVE
            continue
        ran.append(operation.label)
    assert "POST /v1/jobs" in ran and "GET /v1/jobs/{job_id}/results" in ran
