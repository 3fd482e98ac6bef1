"""The report email: built from a run document, sent over SMTP or to the outbox.

``build_report_email`` is pure (it reads the templates and the attachment
files); ``send_mail`` is the only part that touches the network or disk, and
makes one attempt per call (retries are the mail ledger's, ``runs/mailing.py``).
"""

from rosterdrop.mail.report import build_report_email
from rosterdrop.mail.transport import send_mail

__all__ = ["build_report_email", "send_mail"]
