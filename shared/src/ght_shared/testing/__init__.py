"""The test kit of the platform: real servers, tokens, apps and streams for every service.

- :mod:`.plugin` (loaded for the whole suite): the session's PostgreSQL and NATS,
  ``make_settings``, ``make_token``, ``auth`` (headers of a demo role's token),
  ``running_app``, ``wait_for``;
- :mod:`.apps`: ``app_fixtures(name, create_app, Settings, alembic_ini)``, the settings →
  app → client fixtures of a service;
- :mod:`.streams`: ``publish_event``, ``tap_stream``, ``published`` on real JetStream;
- :mod:`.pipeline` and :mod:`.effects`: an outbox, relay and consumer without HTTP, and
  a handler whose effect can be counted (delivery guarantees).
"""

from __future__ import annotations

from ght_shared.testing.plugin import Headers as Headers
