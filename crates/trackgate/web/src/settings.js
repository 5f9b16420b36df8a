// An organization's settings, for its admins: how long its positions are kept. Every change needs
// a recent sign-in (`auth.reauth_max_age_secs`); when the API asks for one, the change is kept in
// this tab, the provider signs the user in afresh (`prompt=login`, `max_age=0`), and the change is
// made once on return, by the same user, within a few minutes, or not at all.

import { StepUp } from './api.js';

const PENDING = 'trackgate.pending-change';
const PENDING_FOR_MS = 10 * 60 * 1000;

const $ = (id) => document.getElementById(id);

function kept(org) {
  return org.positions_retention_days == null
    ? `${org.positions_kept_days} days (the service's default)`
    : `${org.positions_kept_days} days`;
}

export class OrgSettings {
  constructor(api, session, me) {
    this.api = api;
    this.session = session;
    this.me = me;
    this.orgs = [];
    $('settings-open').hidden = false;
    $('settings-open').onclick = () => this.open();
    $('s-close').onclick = () => { $('settings').hidden = true; };
    $('s-org').onchange = () => this.show();
    $('retention-form').onsubmit = (ev) => {
      ev.preventDefault();
      const raw = $('s-days').value.trim();
      this.save($('s-org').value, raw === '' ? null : Number(raw));
    };
  }

  /** Whether `me` administers any organization (or all of them). */
  static wanted(me) {
    return me.platform_admin || me.memberships.some((m) => m.role === 'admin');
  }

  async open() {
    $('settings').hidden = false;
    await this.load();
  }

  async load() {
    try {
      this.orgs = await this.api.orgs();
    } catch (e) {
      $('s-status').textContent = `Could not load the organizations: ${e.message}`;
      return;
    }
    const select = $('s-org');
    const chosen = select.value;
    select.replaceChildren(...this.orgs.map((o) => new Option(`${o.name} (${o.id})`, o.id)));
    if (this.orgs.some((o) => o.id === chosen)) select.value = chosen;
    this.show();
  }

  show() {
    const org = this.orgs.find((o) => o.id === $('s-org').value);
    $('s-kept').textContent = org ? `Positions are kept ${kept(org)}.` : '';
    $('s-days').value = org?.positions_retention_days ?? '';
  }

  async save(org, days) {
    const status = $('s-status');
    status.textContent = 'Saving…';
    try {
      await this.api.setRetention(org, days);
    } catch (e) {
      if (!(e instanceof StepUp)) {
        status.textContent = `Could not save: ${e.message}`;
        return;
      }
      const pending = { org, days, subject: this.me.subject, issuer: this.me.issuer, at: Date.now() };
      sessionStorage.setItem(PENDING, JSON.stringify(pending));
      status.textContent = 'This change needs a fresh sign-in: to the provider…';
      if (!(await this.session.signInAgain())) {
        sessionStorage.removeItem(PENDING);
        status.textContent = `${e.message}. With a dev token: mint a new one with \`trackgate dev-token\` and sign in with it.`;
      }
      return;
    }
    status.textContent = `Saved: ${org}'s positions retention is ${days == null ? "the service's default" : `${days} days`}.`;
    await this.load();
  }

  /** After a sign-in: make the change that waited for it, once. */
  async resume() {
    const raw = sessionStorage.getItem(PENDING);
    if (!raw) return;
    sessionStorage.removeItem(PENDING);
    let p;
    try { p = JSON.parse(raw); } catch { return; }
    if (p.subject !== this.me.subject || p.issuer !== this.me.issuer || !(Date.now() - p.at < PENDING_FOR_MS)) return;
    await this.open();
    $('s-org').value = p.org;
    this.show();
    try {
      await this.api.setRetention(p.org, p.days);
    } catch (e) {
      $('s-status').textContent = `Could not save after signing in again: ${e.message}`;
      return;
    }
    await this.load();
    $('s-status').textContent = `Saved after a fresh sign-in: ${p.org}'s positions retention is ${p.days == null ? "the service's default" : `${p.days} days`}.`;
  }

  static forget() {
    sessionStorage.removeItem(PENDING);
  }
}
