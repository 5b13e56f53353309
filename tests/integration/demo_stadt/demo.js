// The demo city's own single-page navigation: links of the main navigation change the view without a reload.
document.querySelectorAll("nav a").forEach(function (a) {
  a.addEventListener("click", function (e) {
    e.preventDefault();
    history.pushState({}, "", a.getAttribute("href"));
    document.getElementById("titel").textContent = a.textContent;
  });
});
