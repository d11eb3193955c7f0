import { useState, type FormEvent } from "react";
import { request, toApiError, type Me } from "../api";

export function SignIn({ onSignedIn }: { onSignedIn: (me: Me) => void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = new URLSearchParams({ username, password });
      const r = await request<{ username: string; role: Me["role"] }>("/v1/auth/login", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body,
      });
      onSignedIn({ username: r.username, role: r.role });
    } catch (err) {
      const e2 = toApiError(err);
      setError(
        // 422: a field the API refuses (never shown: it may echo what was typed, a password in the name field)
        e2.status === 401 || e2.status === 422
          ? "Wrong user name or password."
          : e2.status === 429
            // a short Retry-After: every password check of the server is busy (not this user's attempts)
            ? e2.retryAfterS !== null && e2.retryAfterS <= 5
              ? "The server is busy checking other sign-ins: try again in a moment."
              : "Too many attempts: wait a minute and try again."
            : e2.status === 0
              ? `Cannot reach the server (${e2.detail}): check the connection and try again.`
              : `Sign-in failed (${e2.message}).`,
      );
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="signin">
      <form className="card signin-card" onSubmit={submit} data-testid="signin-form">
        <h1>StoreLens</h1>
        <p className="muted">Sign in to the store dashboard.</p>
        <label className="field block">
          <span>User name</span>
          <input name="username" autoComplete="username" value={username} required
            onChange={(e) => setUsername(e.target.value)} data-testid="username" />
        </label>
        <label className="field block">
          <span>Password</span>
          <input name="password" type="password" autoComplete="current-password" value={password} required
            onChange={(e) => setPassword(e.target.value)} data-testid="password" />
        </label>
        {error && <div className="problem" role="alert" data-testid="signin-error">{error}</div>}
        <button className="primary" type="submit" disabled={busy} data-testid="signin-submit">
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </div>
  );
}
