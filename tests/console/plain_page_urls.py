"""A console page written as the README says new ones are (tests/console/test_browser_a11y.py):
plain HTML in base_site.html's content block, mounted before the admin's own URLs."""

from __future__ import annotations

from django.contrib import admin
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path

from config.urls import urlpatterns as console_urlpatterns

PLAIN_PAGE = engines["django"].from_string(
    """{% extends "admin/base_site.html" %}
{% block nav-global %}
<li class="vs-action"><a href="/admin/monitor/" id="plain-tool">Monitor</a></li>
{% endblock %}
{% block content %}
<div id="content-main">
  <p>An owner page in plain HTML, with <a href="/admin/guards/">a link in its text</a>.</p>
  <ul class="object-tools"><li><a href="/admin/positions/openposition/">Positions</a></li></ul>
  <div class="module" id="plain-module">
    <h2>Open positions on XAUUSD</h2>
    <table id="plain-table">
      <thead><tr><th scope="col">Client</th><th scope="col">Lots</th><th scope="col">P&amp;L</th></tr></thead>
      <tbody>
        <tr><td>Northwind Capital Partners</td><td>1.25</td><td>10,987.65 USD</td></tr>
        <tr><td>Amélie Durand-Lefèvre</td><td>0.50</td><td>-1,234.56 USD</td></tr>
      </tbody>
    </table>
  </div>
  <figure>
    <svg viewBox="0 0 10 2" width="120" height="24" role="img" aria-label="a bar">
      <rect width="6" height="2"/></svg>
    <figcaption>A figure and its caption.</figcaption></figure>
  <p class="help">Help text under it.</p>
</div>
{% endblock %}"""
)


def plain_page(request):
    return TemplateResponse(
        request, PLAIN_PAGE, {**admin.site.each_context(request), "title": "A plain page"}
    )


urlpatterns = [
    path("admin/plain/", admin.site.admin_view(plain_page), name="plain-page"),
    *console_urlpatterns,
]
