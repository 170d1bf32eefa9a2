// Run on every change of a shared control, with its values in KEYS order: the page's query string follows them
// (other keys, such as gradio's __theme, are kept), so the address bar is always a share link. A prompt longer
// than PROMPT_BYTES (URL-encoded) is left out: the page sends its query string with every request, and servers
// refuse request lines of some 8-16 kB. KEYS and PROMPT_BYTES are filled in when the app reads this file.
(...values) => {
  const keys = KEYS;
  const query = new URLSearchParams(window.location.search);
  if (query.has("study") || query.has("researcher")) return;  // a study's own link stays as sent: no methods in it
  keys.forEach((key, i) => {
    const value = Array.isArray(values[i]) ? values[i].join(",") : values[i];
    if (value === null || value === undefined || value === "") query.delete(key);
    else query.set(key, String(value));
  });
  if (encodeURIComponent(query.get("prompt") || "").length > PROMPT_BYTES) query.delete("prompt");
  window.history.replaceState(window.history.state, "",
    window.location.pathname + "?" + query.toString() + window.location.hash);
}
