import { testDocExamples } from '../helpers/doc-examples.ts';

testDocExamples('docs/http.md', 3);
