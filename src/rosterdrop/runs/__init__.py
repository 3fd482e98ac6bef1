"""The run lifecycle: one upload in, one history run, artifacts and an email out.

``runner`` drives a run through the pure pipeline and the store; ``document``
is the run document every output is rendered from; ``artifacts`` and
``asm_writer`` write what the uploader finds in ``/reports``.
"""
