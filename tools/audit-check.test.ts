import { describe, expect, it } from 'vitest';
import { allowListProblems, evaluate, type AuditReport } from './audit-check.ts';

const report: AuditReport = {
  vulnerabilities: {
    lodash: { name: 'lodash', severity: 'high', via: [{ source: 1, name: 'lodash', title: 'Prototype pollution', url: 'https://github.com/advisories/GHSA-aaaa-bbbb-cccc', severity: 'high' }] },
    wrapper: { name: 'wrapper', severity: 'high', via: ['lodash'] },
    minimist: { name: 'minimist', severity: 'moderate', via: [{ source: 2, name: 'minimist', title: 'Moderate thing', url: 'https://github.com/advisories/GHSA-dddd-eeee-ffff', severity: 'moderate' }] },
    jsonwebtoken: { name: 'jsonwebtoken', severity: 'critical', via: [{ source: 3, name: 'jsonwebtoken', title: 'Signature bypass', url: 'https://github.com/advisories/GHSA-gggg-hhhh-iiii', severity: 'critical' }] },
  },
};
const today = new Date('2026-11-29T12:00:00Z');

describe('the npm audit gate', () => {
  it('fails on every high or critical advisory, and only those', () => {
    const { blocking } = evaluate(report, [], today);
    expect(blocking.map((finding) => finding.package).sort()).toEqual(['jsonwebtoken', 'lodash']);
  });

  it('lets an allow-listed advisory through until its expiry day, then fails on it and on the entry', () => {
    const entry = { advisory: 'GHSA-aaaa-bbbb-cccc', package: 'lodash', reason: 'not reachable: only used by a build tool', expires: '2026-12-31' };
    expect(evaluate(report, [entry], today).blocking.map((finding) => finding.package)).toEqual(['jsonwebtoken']);
    const later = evaluate(report, [entry], new Date('2027-01-01T00:00:00Z'));
    expect(later.blocking.map((finding) => finding.package).sort()).toEqual(['jsonwebtoken', 'lodash']);
    expect(later.expired).toEqual([entry]);
    // An entry for another package does not accept the advisory.
    expect(evaluate(report, [{ ...entry, package: 'other' }], today).blocking).toHaveLength(2);
  });

  it('refuses allow-list entries without a reason or a date', () => {
    expect(allowListProblems([{ advisory: 'GHSA-x', package: 'p', reason: 'because', expires: '2027-01-01' }])).toHaveLength(1);
    expect(allowListProblems([{ advisory: 'GHSA-x', package: 'p', reason: 'a real reason here', expires: 'soon' }])).toHaveLength(1);
    expect(allowListProblems([{ advisory: 'GHSA-x', package: 'p', reason: 'a real reason here', expires: '2027-01-01' }])).toEqual([]);
  });
});
