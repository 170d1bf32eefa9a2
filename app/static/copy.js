// "Copy link": the address bar is the share link already (see share.js); the button flashes "copied".
() => {
  const url = window.location.href;
  const button = document.querySelector("#copy-link");
  const done = () => {
    if (!button) return;
    button.dataset.copied = "1";
    setTimeout(() => delete button.dataset.copied, 2000);
  };
  const ask = () => window.prompt("Copy this link:", url);
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(url).then(done, ask);
  else ask();
}
