"""The app's stylesheet, in one place: rules for the panes of every tab. Kept as App.CSS rather than each
widget's DEFAULT_CSS because App CSS outranks the DEFAULT_CSS of Textual's own widgets (Input, TabPane), which
several of these rules override."""

APP_CSS = """
Screen { layout: vertical; }
#error { padding: 1 2; color: $error; text-style: bold; }
#browse-left { width: 45%; min-width: 50; }
#browse-right { width: 1fr; border-left: vkey $secondary; }
/* A narrow terminal (80 columns): the list above the detail, each full width, instead of a 27-column detail. */
#browse.narrow { layout: vertical; }
#browse.narrow #browse-left { width: 100%; min-width: 0; height: 45%; min-height: 11; }
#browse.narrow #browse-right { width: 100%; height: 1fr; border-left: none; }
#query { margin: 0 0; }
/* Narrow: a one-line search box (compact, no border) so 24 rows leave the list 6 rows (min-height above: the box,
   status, header and the list's border take 5); focus shows as a tint, there being no border to colour. */
#query.-textual-compact { padding: 0 1; }
#query.-textual-compact:focus { background-tint: $accent 25%; }
#list-status, #list-header { height: 1; padding: 0 1; }
#list-status { height: auto; }  /* wraps in a narrow pane rather than cutting off the explainer */
#list-header { text-style: bold; }
/* A visible focus ring: the focusable panes keep a dim border that turns to the accent colour with focus. */
#list, #detail, AuditPane, MonitorPane, PlotsPane { border: round $panel-lighten-2; }
#list:focus, #detail:focus, AuditPane:focus, MonitorPane:focus, PlotsPane:focus, #query:focus {
    border: round $accent;
}
#list { border-title-align: left; }
"""
