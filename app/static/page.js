// Run once when the page loads (gradio's `js`): a click on a chart point writes "<sample id>:<click time>" (the id
// is the trace's customdata; the time makes a second click on the point a change too) into the hidden #point-pick
// box, whose change event shows that sample; in a dark page the chart swaps in the dark template after each draw
// (gradio draws the server's figure with Plotly.react into the same div, so the listeners stay). DARK_TEMPLATE is
// replaced by plotly's dark template when the app reads this file.
() => {
  const DARK = DARK_TEMPLATE;
  const isDark = () => document.body.classList.contains("dark")
    || document.documentElement.classList.contains("dark");
  const pick = (id) => {
    const box = document.querySelector("#point-pick textarea");
    if (!box || id === undefined || id === null) return;
    box.value = id + ":" + Date.now();
    box.dispatchEvent(new Event("input", {bubbles: true}));
  };
  const wire = (gd) => {
    if (gd.mavisWired || typeof gd.on !== "function") return;
    gd.mavisWired = true;
    gd.on("plotly_click", (event) => pick(event && event.points && event.points.length
      ? event.points[0].customdata : null));
    const theme = () => {
      if (!isDark() || !window.Plotly || gd.mavisLayout === gd.layout) return;
      gd.mavisLayout = gd.layout;
      window.Plotly.relayout(gd, {template: DARK});
    };
    gd.on("plotly_afterplot", theme);
    theme();
  };
  const scan = () => document.querySelectorAll("#pareto .js-plotly-plot").forEach(wire);
  new MutationObserver(scan).observe(document.body, {childList: true, subtree: true});
  scan();
}
