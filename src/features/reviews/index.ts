export { completeOverdueReviews, remindOverdueReviews, reviewRoutes, startReviewJobs } from './reviews.ts';
