// Package lambdas holds Strata's functions: the work that object-created events
// trigger (compaction, retention and garbage collection today). Each function is a
// package with a Handler (lambdas/compaction) and a thin AWS Lambda main under it
// (lambdas/compaction/bootstrap). The same handlers run locally: `strata functions`
// receives MinIO webhook notifications and `strata local` calls them in-process, both
// through lambdas/runner.
//
// Every environment decodes its events with lambdas/trigger, so a Lambda invocation
// and a webhook delivery of the same event do the same work. aws-lambda-go is imported
// only under this folder; nothing outside cmd/ and integration/ imports it.
package lambdas
