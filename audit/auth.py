"""Optional password login for the dashboard, and the reviewer name recorded with human labels.

No password is asked by default (a dashboard on localhost). For a shared deployment set a hash:

* the environment variable ``REFUSAL_AUDIT_DASHBOARD_PASSWORD_HASH``, or
* a secrets file: ``REFUSAL_AUDIT_DASHBOARD_SECRETS=/path/secrets.toml`` (or Streamlit's own
  ``.streamlit/secrets.toml``) containing ``password_hash = "pbkdf2_sha256$..."``.

Make a hash with ``python -m audit.auth`` (reads the password without echo and prints the hash).
The hash is PBKDF2-HMAC-SHA256 with a random salt; passwords are never stored or logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tomllib
from pathlib import Path

ENV_HASH = "REFUSAL_AUDIT_DASHBOARD_PASSWORD_HASH"
ENV_SECRETS = "REFUSAL_AUDIT_DASHBOARD_SECRETS"
SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 310_000


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt b64>$<digest b64>`` for ``password``."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"{SCHEME}${iterations}${b64(salt)}${b64(digest)}"


def _unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash (constant-time comparison)."""
    try:
        scheme, iterations, salt, digest = stored.strip().split("$")
        if scheme != SCHEME:
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def configured_hash(environ: dict | None = None) -> str | None:
    """The password hash from the environment or a secrets file, or ``None`` (no login)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_HASH, "").strip():
        return env[ENV_HASH].strip()
    candidates = [env.get(ENV_SECRETS)] if env.get(ENV_SECRETS) else []
    candidates.append(str(Path.cwd() / ".streamlit" / "secrets.toml"))
    for cand in candidates:
        path = Path(cand)
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the secrets file: {exc}") from exc
        value = data.get("password_hash") or (data.get("dashboard") or {}).get("password_hash")
        if value:
            return str(value).strip()
    return None


def login_gate(st) -> str | None:
    """Show the login form when a password is configured; returns the signed-in user name.

    Returns ``None`` while not signed in (the caller stops rendering). Without a configured
    password, returns the reviewer name typed in the sidebar (may be empty: reviewing then asks
    for it), defaulting to the OS user.
    """
    wanted = configured_hash()
    if wanted is None:
        default = st.session_state.get("reviewer") or os.environ.get("USER", "")
        name = st.sidebar.text_input("Reviewer name", value=default, key="reviewer_input")
        st.session_state["reviewer"] = name.strip()
        return st.session_state["reviewer"]
    if st.session_state.get("auth_user"):
        st.sidebar.caption(f"Signed in as **{st.session_state['auth_user']}**")
        if st.sidebar.button("Sign out"):
            st.session_state.pop("auth_user", None)
            st.rerun()
        st.session_state["reviewer"] = st.session_state["auth_user"]
        return st.session_state["auth_user"]
    st.title("Refusal audit — sign in")
    with st.form("login"):
        user = st.text_input("Your name (recorded with your review labels)")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if not user.strip():
            st.error("Enter your name.")
        elif verify_password(password, wanted):
            st.session_state["auth_user"] = user.strip()
            st.rerun()
        else:
            st.error("Wrong password.")
    return None


def main() -> None:
    import getpass

    pw = getpass.getpass("Dashboard password: ")
    if pw != getpass.getpass("Again: "):
        raise SystemExit("the passwords differ")
    print(hash_password(pw))
    print(f"# export {ENV_HASH}='<the line above>'", flush=True)


if __name__ == "__main__":
    main()
