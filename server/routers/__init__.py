"""HTTP routes: ``audio`` (the OpenAI audio endpoints), ``models`` (/v1/models), ``ops`` (health, ready, metrics).

Routers parse and answer HTTP; the work goes through ``SpeechService`` (app.state.service).
They never import torch.
"""
